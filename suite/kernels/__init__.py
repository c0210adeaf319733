"""Kernels of neural network quantum states: infinite width, empirical, fast discrete path."""
