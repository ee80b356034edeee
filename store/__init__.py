"""Persistence shared by the app and the worker: the vector index and the image store."""
