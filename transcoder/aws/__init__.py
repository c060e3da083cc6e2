"""One adapter per AWS service (and the ECS agent); SDK errors translated at this edge."""
