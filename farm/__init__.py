"""farm: a hardware test farm for the x86-64 BPF JIT's tail calls."""
