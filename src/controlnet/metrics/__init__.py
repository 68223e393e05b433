"""Metric definitions, one each: does a picture follow its condition (edges, depth, segmentation,
`fidelity` per annotator), and the miniature world's exact scores (`world`, `adherence`). A layer
below training and evaluation, which both score with them (`controlnet.evaluation` re-exports them)."""
