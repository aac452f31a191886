"""edgetune as an agent's tool: one set of tool definitions (`tools.py`) served over MCP
(`mcp_server.py`: streamable HTTP at /mcp and stdio) and as OpenAI function schemas (`/v1/tools`)."""
