"""The data district: the contract, its physics, generation, dataset folders, reading,
validation, exports and shards. Imports nothing from the other districts."""
