"""fedmm.core"""
