"""A campaign's files and what they mean: the config, its search space and identity, every file
name, the records of generations (no HDF5 in :mod:`hpsrl.campaign.model`, all of it in
:mod:`hpsrl.campaign.storage`), the evidence a configuration's seeds give, and the rungs of
successive halving. The bottom of the package: it imports nothing of hpsrl but the agents'
hyperparameters and the environments' specs."""
