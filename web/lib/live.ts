"use client";

// The dashboard's live feed: Server-Sent Events from /api/web/stream read with fetch (so the token travels in
// the Authorization header, never in a URL), reconnecting with a growing pause when the line drops.
import { useEffect, useState } from "react";

export type Tier = { type: string; price: number; status: string; quantity: number };
export type Position = {
  id: number;
  account_no: string;
  code: string;
  name: string;
  entry_price: number;
  current_price: number | null;
  profit_rate: number | null;
  quantity: number;
  held_quantity: number;
  status: string;
  tiers: Tier[];
};
export type Order = {
  id: number;
  code: string;
  side: string;
  purpose: string;
  quantity: number;
  price: number | null;
  status: string;
  filled_quantity: number;
  at: string;
};
export type Trade = {
  id: number;
  code: string;
  name: string;
  action: string;
  quantity: number;
  price: number;
  amount: number;
  profit_loss: number | null;
  exit_reason: string | null;
  executed_at: string;
};
export type EquityPoint = { day: string; equity: number; drawdown: number };
export type Snapshot = {
  at: string;
  version: string;
  positions: Position[];
  orders: Order[];
  trades: Trade[];
  realized_pnl: number;
  unrealized_pnl: number;
  equity: EquityPoint[];
};

export type LiveState = "connecting" | "live" | "offline";

export function useLive(token: string | null, onUnauthorized: () => void) {
  const [snapshot, setSnapshot] = useState<Snapshot | null>(null);
  const [state, setState] = useState<LiveState>("connecting");

  useEffect(() => {
    if (!token) return;
    const abort = new AbortController();
    let pause = 500;

    async function connect(): Promise<void> {
      setState("connecting");
      const r = await fetch("/api/web/stream", {
        headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
        signal: abort.signal,
        cache: "no-store",
      });
      if (r.status === 401) {
        onUnauthorized();
        return;
      }
      if (!r.ok || !r.body) throw new Error(String(r.status));
      setState("live");
      pause = 500;
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) throw new Error("stream ended");
        buffer += value;
        let cut: number;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block
            .split("\n")
            .filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).trimStart())
            .join("\n");
          if (block.includes("event: snapshot") && data) setSnapshot(JSON.parse(data) as Snapshot);
        }
      }
    }

    (async () => {
      while (!abort.signal.aborted) {
        try {
          await connect();
          return; // 401: the session ended
        } catch {
          if (abort.signal.aborted) return;
          setState("offline");
          await new Promise((ok) => setTimeout(ok, pause));
          pause = Math.min(pause * 2, 15000);
        }
      }
    })();
    return () => abort.abort();
  }, [token, onUnauthorized]);

  return { snapshot, state };
}
