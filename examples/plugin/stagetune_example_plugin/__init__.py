"""stagetune's example plugin: importing it registers every example.

`pip install` it and stagetune finds it by its entry point (group `stagetune.plugins`);
every process that validates or runs a study imports it, Ray workers included.

- `seq_attention` (model): self-attention over MNIST-1D with its own knob, num_heads;
- `digit_tags` (dataset): digits with five yes/no tags, BCE and macro-F1;
- `fashion_png` (dataset): Fashion-MNIST written as PNG files, then streamed;
- `digits_loop` (trainer): a plain-PyTorch loop of its own, probed through its parts;
- `digits_numpy` (command trainer): a NumPy script printing JSON lines of metrics.
"""

from stagetune_example_plugin import attention, command, loop, multilabel, png_folder

__all__ = ["attention", "command", "loop", "multilabel", "png_folder"]
