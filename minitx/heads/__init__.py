"""Which attention heads matter (measure.py: masking, gradient importance, attention statistics)
and removing the least important ones (pruning.py): `minitx heads`."""
