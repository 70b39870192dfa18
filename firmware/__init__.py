"""C sources of the firmware runtime and board support, shipped as package data."""
from pathlib import Path

ROOT: Path = Path(__file__).resolve().parent
