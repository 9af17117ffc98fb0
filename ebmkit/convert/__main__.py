"""`python -m ebmkit.convert`: convert a reference JEM checkpoint."""

from ebmkit.convert import converter

if __name__ == "__main__":
  converter.main()
