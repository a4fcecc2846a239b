"""Training: one phase (:mod:`.loop`) over batches (:mod:`.batches`) with resumable checkpoints
(:mod:`.checkpoints`), the base as a Gaussian denoiser (:mod:`.pretrain`), the two-phase recipe
(:mod:`.recipe`) and measuring a network (:mod:`.evaluation`). The public functions are
``lorun_peft.train``, ``lorun_peft.train_two_phase`` and ``lorun_peft.evaluate``."""
