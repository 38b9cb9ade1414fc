"""Infrastructure the experiments stand on: servers, cluster launchers, data sets, seed packets."""
