"""PyTorch trainer (B-SNN): binary weights, LIF layers, hardware-exact evaluation, export to .bsnn."""
