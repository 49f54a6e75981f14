"""MobileDet backbones + SSDLite head, anchors, box coder, training and export."""
