"""The official Wan2.2 runtime (module `wan`, PyPI `wan22` or a checkout of Wan-Video/Wan2.2): load only
the parts a text/image-to-video run uses (`loader`), route its attention where flash-attn is missing
(`attention`), assemble its pipelines with random weights or load a checkpoint through its own
constructors (`build`), and measure one point per stage like the diffusers runner (`runner`)."""
