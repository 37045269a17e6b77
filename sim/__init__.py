"""cocotb benches and runner: RTL against the golden model on Icarus and Verilator."""
