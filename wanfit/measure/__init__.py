"""The measuring side of wanfit: everything that imports torch, diffusers or pynvml lives here."""
