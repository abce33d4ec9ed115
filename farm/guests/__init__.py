"""Virtual hosts: QEMU guests (TCG) of an Intel or AMD CPU model booting a
packaged kernel; one job in a fresh guest (`farm lab run`) or a lab of
guests each running a worker (`farm lab up`)."""
