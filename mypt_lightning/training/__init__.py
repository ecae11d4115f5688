"""Training: the LightningModule (weighted-mask loss, NEFTune), the ``run.py`` entry point,
optimizer and schedule, callbacks and loggers, the curriculum, FSDP/DDP setup and the
fault-tolerance callback (preemption, signals, run-directory claims)."""
