"""How the house writes quantities: durations, periods, sizes and wall-clock instants."""
