"""One module per stage of a Wan job: each declares the quantities it fits (their names in calibration files)
and holds both their fit (from measurements, through a FitContext) and their prediction (through a
PredictContext). A plan knob or a runtime that changes a stage changes that stage's module.

text_encode, denoise (with the expert switch's memory), vae_decode, allocator (the caching allocator's
reservation and the memory outside torch), host (init, prepare, model offload's whole-model moves).
"""
