"""Recipe search: recipe operators, solvers, the recipe table."""
