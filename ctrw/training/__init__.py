"""Algorithm 1: black-box PGD adversarial training of a CTRW network."""
