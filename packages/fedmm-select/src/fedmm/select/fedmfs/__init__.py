"""FedMFS: selective modality upload (Yuan et al., ICC 2024, arXiv 2310.07048)."""
