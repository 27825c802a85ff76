"""Where generation g+1 comes from: :mod:`hpsrl.search.evolve` (``next_population``, and
``best_of``: the campaign's answer), with the GA's operators, Bayesian optimisation, NSGA-II's
ranking and the collection of a generation's results into its record."""
