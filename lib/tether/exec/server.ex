defmodule Tether.Exec.Server do
  @moduledoc false
  # Owns the table of `:exec` proxies (os_pid -> proxy pid) and answers for `:exec.start_link/1`
  # and friends. Started by Tether's application; the real work is Tether's.
  use GenServer

  @table :tether_exec_proxies

  def start_link(_), do: GenServer.start_link(__MODULE__, :ok, name: __MODULE__)

  @doc false
  def table, do: @table

  @impl true
  def init(:ok) do
    :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])
    {:ok, %{debug: 0}}
  end

  @impl true
  def handle_call({:debug, level}, _from, state),
    do: {:reply, {:ok, state.debug}, %{state | debug: level}}
end
