"""BPF side of farm: the bpf() syscall layer, the corpus and its loader."""
