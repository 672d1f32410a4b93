"""Recipe search's stages: recipe, recipe-search, finalist, proxy-check."""
