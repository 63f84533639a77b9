"""Experiments that reproduce a claim of the paper with the package's own trainer, one module each.

- ``weight_map_ablation``: the same U-Net trained for the same budget with and without the paper's weight map
  (``--loss weighted-ce`` vs ``--loss ce``) on the touching cells, over several seeds.
"""
