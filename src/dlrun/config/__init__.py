"""The config tree's schema, names and rules: everything dlrun knows before torch is imported."""
