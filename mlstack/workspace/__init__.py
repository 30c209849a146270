"""The project on disk: the one writer, the manifest (mlstack.lock.json), plan (the diff of
the last compile against this one), build (compile into the output folder) and blueprints."""
