"""Training: `lumamba-train pretrain|finetune` (cli), the loop (loop.fit), its configuration
(config.TrainConfig), optimiser and schedule (optim), checkpoints and resumption (state),
datasets and epoch order (data), DDP set-up (distributed) and the two tasks (tasks)."""
