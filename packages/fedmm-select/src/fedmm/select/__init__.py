"""fedmm.select — FedMFS and BMSFed (work in progress, issue 5)."""
