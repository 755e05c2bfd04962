defmodule Tether.TestCluster.Health do
  @moduledoc """
  The health endpoint a default cluster node serves, and the checks the manager runs.

  Inside a node, `serve/2` starts OTP's `:inets` httpd on `address:port`; every path answers
  `200 ok`. The module is also the httpd callback module (its `do/1`).
  """

  @doc "Starts the health endpoint on `address:port` (inside a cluster node)."
  @spec serve(:inet.port_number(), :inet.ip_address()) :: {:ok, pid} | {:error, term}
  def serve(port, address \\ {127, 0, 0, 1}) do
    {:ok, _} = Application.ensure_all_started(:inets)
    root = String.to_charlist(System.tmp_dir!())

    :inets.start(:httpd,
      port: port,
      server_name: ~c"tether_node",
      server_root: root,
      document_root: root,
      bind_address: address,
      modules: [__MODULE__]
    )
  end

  @doc false
  # The httpd callback: answers every request with 200 and the node's name.
  def unquote(:do)(_mod_data) do
    {:proceed, [response: {200, String.to_charlist("ok #{node()}")}]}
  end

  @doc """
  GETs `url` with a short timeout: `:ok` on a 200, `{:error, reason}` otherwise.

      iex> Tether.TestCluster.Health.http_get("http://127.0.0.1:1/health")
      {:error, :unreachable}
  """
  @spec http_get(String.t(), timeout) :: :ok | {:error, term}
  def http_get(url, timeout \\ 1000) do
    {:ok, _} = Application.ensure_all_started(:inets)
    request = {String.to_charlist(url), []}

    case :httpc.request(:get, request, [timeout: timeout, connect_timeout: timeout], []) do
      {:ok, {{_, 200, _}, _headers, _body}} -> :ok
      {:ok, {{_, status, _}, _headers, _body}} -> {:error, {:http_status, status}}
      {:error, {:failed_connect, _}} -> {:error, :unreachable}
      {:error, reason} -> {:error, reason}
    end
  end
end
