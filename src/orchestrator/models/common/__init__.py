"""What the diffusion variants share: noise schedules, training losses, Min-SNR weighting."""
