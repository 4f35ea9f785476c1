"""The trainer: ``train_and_evaluate`` (:mod:`bnnns.train.train_lib`), the pure steps, stage
initialisation, optimizers, checkpoints, workdirs, configs (defaults and checks), sharding over
a mesh and the metric writer. Imports core, nn and data; never bench or experiments."""
