"""Images, geometry and channel encodings: everything between model space and files on disk."""
