"""Clinical DICOM I/O: image series with geometry checks, RTSTRUCT contours to label maps."""
