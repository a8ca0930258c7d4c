# The package's version, in this one place: pyproject.toml's metadata reads it from this line
# ([tool.scikit-build.metadata.version]), and `a3s-power --version` prints it.
__version__ = "0.1.0"

# The Ollama API this server implements, which /api/version reports: clients gate features on it
# (one public client needs >= 0.3.0 for tools; Open WebUI parses it). It is the Ollama release whose
# routes and fields we follow (v0.32.15, ../shared/reference/peers-2026-12.md). Ours stays in
# /health, the Server header and `a3s-power --version`.
OLLAMA_API_VERSION = "0.32.15"
