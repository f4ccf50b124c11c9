"""Orchestrator for diffusion-model finetuning and evaluation sweeps."""
