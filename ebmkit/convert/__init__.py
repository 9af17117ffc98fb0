"""Converting the reference PyTorch JEM checkpoints: the converter and its command line
(converter, `python -m ebmkit.convert`) and a torch-free reader of `.pt` files (torch_checkpoint).
"""
