"""Untrusted media: the sandboxed decoders of images and video, and the previews made from what they return."""
