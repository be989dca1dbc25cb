"""Inference-server client (issue 15): a session's images to a segmentation model and back.

``ai.nifti`` builds NIfTI volumes from MRD image series and MRD images from NIfTI (one geometry
code for ``modules/inference.py``, ``tools/mrd2nifti.py`` and ``tools/nifti2mrd.py``);
``ai.client`` speaks the v1 and v2 task API of an inference server (mathiser/inference_server);
``ai.labels`` checks a returned label map and turns it into a label series and ROI contours.
"""
