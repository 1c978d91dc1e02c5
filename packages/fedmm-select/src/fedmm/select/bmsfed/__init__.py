"""BMSFed: balanced modality selection (Fan et al., ECCV 2024, arXiv 2401.00403)."""
