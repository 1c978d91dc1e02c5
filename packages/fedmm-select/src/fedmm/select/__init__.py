"""fedmm.select — techniques that select: FedMFS (which modality models a client uploads) and
BMSFed (which clients, and which modality set, the server picks); RandomUpload, FedMFS's
random-upload baseline."""

from fedmm.select.baselines import RandomUpload
from fedmm.select.bmsfed import BMSFed
from fedmm.select.fedmfs import FedMFS

__all__ = ["BMSFed", "FedMFS", "RandomUpload"]
