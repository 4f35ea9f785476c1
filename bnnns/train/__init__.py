"""The trainer: ``train_and_evaluate`` (:mod:`bnnns.train.train_lib`), a stage and its loop
(:mod:`~bnnns.train.stage`), what an epoch writes (:mod:`~bnnns.train.epoch_record`), resume
bookkeeping (:mod:`~bnnns.train.resume`), the pure steps, stage initialisation, optimizers,
checkpoints, workdirs, configs (defaults and checks), sharding over a mesh and the metric
writer. Imports core, nn and data; never bench or experiments."""
