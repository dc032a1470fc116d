"""Catalog entries, as data: one module per source. Importing a module registers its entries."""
