"""Robustness scoring: corruptions, perturbations, attacks and their metrics.

Domain code only: numpy in, dataclasses out; nothing here imports grpc.
"""
