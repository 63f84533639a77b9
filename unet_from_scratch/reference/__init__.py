"""The NumPy reference: every piece of a U-Net written from scratch, forward and backward.

NumPy (and scipy.ndimage where a well-kept library already does the job) only, never torch: this floor is the
ground truth that torch modules and Triton kernels are tested against.
"""
