"use client";

import Link from "next/link";
import { useEffect, useState } from "react";
import { EquityChart } from "@/components/EquityChart";
import { Shell } from "@/components/Shell";
import { formatKrw, formatKst, formatRate } from "@/lib/format";
import type { Key } from "@/lib/i18n";
import { useLive, type Position, type Trade } from "@/lib/live";
import { api, useSession } from "@/lib/session";

const tierStyle: Record<string, string> = {
  ACTIVE: "bg-blue-50 text-blue-900 border-blue-300",
  EXECUTED: "bg-green-100 text-green-900 border-green-400",
  CANCELLED: "bg-slate-100 text-slate-700 border-slate-300",
};

function rateClass(v: number | null): string {
  // Korean convention: gains red, losses blue.
  if (v === null || v === 0) return "";
  return v > 0 ? "text-red-700" : "text-blue-800";
}

function PositionCard({ p }: { p: Position }) {
  const { t } = useSession();
  return (
    <li data-testid={`position-${p.code}`} className="rounded-lg bg-white p-4 shadow-sm">
      <div className="flex flex-wrap items-baseline gap-x-3">
        <h3 className="text-lg font-semibold">{p.name}</h3>
        <span className="num text-sm text-slate-600">{p.code}</span>
        <span className="ml-auto rounded bg-slate-100 px-2 py-0.5 text-xs" data-testid="strategy-status">
          {p.status}
        </span>
      </div>
      <dl className="num mt-2 grid grid-cols-2 gap-x-4 gap-y-1 text-sm sm:grid-cols-4">
        <div>
          <dt className="text-slate-600">{t("entry")}</dt>
          <dd>{formatKrw(p.entry_price)}</dd>
        </div>
        <div>
          <dt className="text-slate-600">{t("current")}</dt>
          <dd data-testid="current-price">{formatKrw(p.current_price)}</dd>
        </div>
        <div>
          <dt className="text-slate-600">{t("profitRate")}</dt>
          <dd className={rateClass(p.profit_rate)}>{formatRate(p.profit_rate)}</dd>
        </div>
        <div>
          <dt className="text-slate-600">{t("held")}</dt>
          <dd data-testid="held">
            {p.held_quantity} / {p.quantity}
          </dd>
        </div>
      </dl>
      <table className="num mt-3 w-full table-fixed text-sm">
        <caption className="sr-only">{t("tiers")}</caption>
        <thead>
          <tr className="text-left text-slate-600">
            <th scope="col" className="font-normal">
              {t("tiers")}
            </th>
            <th scope="col" className="font-normal">
              {t("price")}
            </th>
            <th scope="col" className="font-normal">
              {t("quantity")}
            </th>
            <th scope="col" className="font-normal">
              {t("status")}
            </th>
          </tr>
        </thead>
        <tbody>
          {p.tiers.map((tier) => (
            <tr key={tier.type} data-testid={`tier-${tier.type}`}>
              <th scope="row" className="py-0.5 text-left font-normal">
                {t(`tier_${tier.type}` as Key)}
              </th>
              <td>{formatKrw(tier.price)}</td>
              <td>{tier.quantity}</td>
              <td>
                <span
                  data-testid="tier-status"
                  className={`rounded border px-1.5 text-xs ${tierStyle[tier.status] ?? tierStyle.CANCELLED}`}
                >
                  {tier.status}
                </span>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </li>
  );
}

function toCsv(trades: Trade[]): string {
  const head = ["executed_at", "code", "name", "action", "exit_reason", "quantity", "price", "amount", "profit_loss"];
  const cell = (v: unknown) => {
    const text = v === null || v === undefined ? "" : String(v);
    // quoted, and a leading = + - @ neutralised so a spreadsheet never runs it as a formula
    return `"${(/^[=+\-@]/.test(text) && Number.isNaN(Number(text)) ? `'${text}` : text).replace(/"/g, '""')}"`;
  };
  const rows = trades.map((r) =>
    [r.executed_at, r.code, r.name, r.action, r.exit_reason, r.quantity, r.price, r.amount, r.profit_loss].map(cell).join(","),
  );
  return "\uFEFF" + [head.join(","), ...rows].join("\r\n") + "\r\n";
}

function download(name: string, text: string) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/csv;charset=utf-8" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export default function DashboardPage() {
  const { token, logout, t } = useSession();
  const { snapshot, state } = useLive(token, logout);
  const [stockFilter, setStockFilter] = useState("");
  const [actionFilter, setActionFilter] = useState("");
  const trades = (snapshot?.trades ?? []).filter(
    (r) =>
      (!actionFilter || r.action === actionFilter) &&
      (!stockFilter || r.name.includes(stockFilter) || r.code.includes(stockFilter)),
  );
  const actions = Array.from(new Set((snapshot?.trades ?? []).map((r) => r.action))).sort();

  return (
    <Shell>
      <div className="mb-4 flex flex-wrap items-center gap-3">
        <h1 className="text-2xl font-bold">{t("dashTitle")}</h1>
        <span
          role="status"
          data-testid="live-state"
          data-state={state}
          className={`rounded-full px-2 py-0.5 text-xs ${
            state === "live" ? "bg-green-100 text-green-900" : "bg-amber-100 text-amber-900"
          }`}
        >
          {state === "live" ? t("live") : state === "connecting" ? t("connecting") : t("offline")}
        </span>
        {snapshot && (
          <span className="num text-xs text-slate-600">
            {t("updatedAt")} {formatKst(snapshot.at)}
          </span>
        )}
        {snapshot && (
          <span className="num ml-auto flex flex-wrap gap-x-4 text-sm">
            <span>
              {t("realized")}:{" "}
              <strong className={rateClass(snapshot.realized_pnl)} data-testid="realized">
                {formatKrw(snapshot.realized_pnl)}
              </strong>
            </span>
            <span>
              {t("unrealized")}:{" "}
              <strong className={rateClass(snapshot.unrealized_pnl)} data-testid="unrealized">
                {formatKrw(snapshot.unrealized_pnl)}
              </strong>
            </span>
          </span>
        )}
      </div>

      {!snapshot ? (
        <p>{t("loading")}</p>
      ) : (
        <>
          {snapshot.positions.length === 0 ? (
            <p className="rounded-lg bg-white p-4 shadow-sm">
              {t("noPositions")}{" "}
              <Link href="/keys/" className="text-blue-800 underline">
                {t("nav_keys")}
              </Link>
            </p>
          ) : (
            <ul className="grid gap-4 md:grid-cols-2" data-testid="positions">
              {snapshot.positions.map((p) => (
                <PositionCard key={p.id} p={p} />
              ))}
            </ul>
          )}

          <section aria-labelledby="equity" className="mt-8">
            <h2 id="equity" className="mb-2 text-lg font-semibold">
              {t("equityTitle")}
            </h2>
            {snapshot.equity.length === 0 ? (
              <p>{t("noEquity")}</p>
            ) : (
              <EquityChart
                points={snapshot.equity}
                labels={{ equity: t("equity"), drawdown: t("drawdown"), summary: t("equityTitle") }}
              />
            )}
          </section>

          <section aria-labelledby="orders" className="mt-8">
            <h2 id="orders" className="mb-2 text-lg font-semibold">
              {t("ordersToday")}
            </h2>
            {snapshot.orders.length === 0 ? (
              <p>{t("noOrders")}</p>
            ) : (
              <div
                tabIndex={0}
                role="region"
                aria-label={t("ordersToday")}
                className="overflow-x-auto rounded-lg bg-white shadow-sm focus:outline-2 focus:outline-blue-700"
              >
                <table className="num w-full min-w-[32rem] text-sm" data-testid="orders">
                  <thead>
                    <tr className="border-b text-left text-slate-600">
                      <th scope="col" className="p-2 font-normal">{t("stock")}</th>
                      <th scope="col" className="p-2 font-normal">{t("side")}</th>
                      <th scope="col" className="p-2 font-normal">{t("quantity")}</th>
                      <th scope="col" className="p-2 font-normal">{t("price")}</th>
                      <th scope="col" className="p-2 font-normal">{t("filled")}</th>
                      <th scope="col" className="p-2 font-normal">{t("status")}</th>
                    </tr>
                  </thead>
                  <tbody>
                    {snapshot.orders.map((o) => (
                      <tr key={o.id} className="border-b last:border-0">
                        <td className="p-2">{o.code}</td>
                        <td className="p-2">
                          {t(`side_${o.side}` as Key) ?? o.side} <span className="text-xs">{o.purpose}</span>
                        </td>
                        <td className="p-2">{o.quantity}</td>
                        <td className="p-2">{formatKrw(o.price)}</td>
                        <td className="p-2">{o.filled_quantity}</td>
                        <td className="p-2">{o.status}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            )}
          </section>

          <section aria-labelledby="trades" className="mt-8">
            <h2 id="trades" className="mb-2 text-lg font-semibold">
              {t("trades")}
            </h2>
            <div className="mb-2 flex flex-wrap items-end gap-3">
              <label className="flex flex-col text-sm">
                {t("filterStock")}
                <input
                  type="search"
                  value={stockFilter}
                  onChange={(e) => setStockFilter(e.target.value)}
                  className="rounded border border-slate-400 px-2 py-1"
                />
              </label>
              <label className="flex flex-col text-sm">
                {t("filterAction")}
                <select
                  value={actionFilter}
                  onChange={(e) => setActionFilter(e.target.value)}
                  className="rounded border border-slate-400 px-2 py-1"
                >
                  <option value="">{t("allActions")}</option>
                  {actions.map((a) => (
                    <option key={a} value={a}>
                      {a}
                    </option>
                  ))}
                </select>
              </label>
              <button
                type="button"
                className="rounded border border-slate-400 bg-white px-3 py-1 text-sm hover:bg-slate-100"
                onClick={() => download(`trades-${snapshot.at.slice(0, 10)}.csv`, toCsv(trades))}
              >
                {t("exportCsv")}
              </button>
            </div>
            {trades.length === 0 ? (
              <p>{t("noTrades")}</p>
            ) : (
              <div
                tabIndex={0}
                role="region"
                aria-label={t("trades")}
                className="overflow-x-auto rounded-lg bg-white shadow-sm focus:outline-2 focus:outline-blue-700"
              >
                <table className="num w-full min-w-[36rem] text-sm" data-testid="trades">
                  <thead>
                    <tr className="border-b text-left text-slate-600">
                      <th scope="col" className="p-2 font-normal">{t("time")}</th>
                      <th scope="col" className="p-2 font-normal">{t("stock")}</th>
                      <th scope="col" className="p-2 font-normal">{t("side")}</th>
                      <th scope="col" className="p-2 font-normal">{t("quantity")}</th>
                      <th scope="col" className="p-2 font-normal">{t("price")}</th>
                      <th scope="col" className="p-2 font-normal">{t("realized")}</th>
                    </tr>
                  </thead>
                  <tbody>
                    {trades.map((tr) => (
                      <tr key={tr.id} className="border-b last:border-0">
                        <td className="p-2">{formatKst(tr.executed_at)}</td>
                        <td className="p-2">{tr.name}</td>
                        <td className="p-2">
                          {tr.action}
                          {tr.exit_reason && tr.exit_reason !== tr.action ? (
                            <span className="text-xs"> ({tr.exit_reason})</span>
                          ) : null}
                        </td>
                        <td className="p-2">{tr.quantity}</td>
                        <td className="p-2">{formatKrw(tr.price)}</td>
                        <td className={`p-2 ${rateClass(tr.profit_loss)}`}>{formatKrw(tr.profit_loss)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            )}
          </section>

          <Notices
            changed={`${snapshot.positions.length}|${snapshot.orders
              .map((o) => `${o.id}:${o.status}:${o.filled_quantity}`)
              .join(",")}`}
          />
        </>
      )}
    </Shell>
  );
}

type Notice = {
  told_at: string;
  trading_day: string;
  kind: string;
  code: string | null;
  name: string | null;
  quantity: number | null;
  price: number | null;
};

/** The notices this user was sent (orders placed, fills, armed exits), newest first; read again only when the
 * live snapshot's orders or positions change, not on a timer. */
function Notices({ changed }: { changed: string }) {
  const { token, logout, t } = useSession();
  const [notices, setNotices] = useState<Notice[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    if (!token) return;
    api<Notice[]>("/api/me/notices?limit=50", { token, onUnauthorized: logout })
      .then((n) => {
        setNotices(n);
        setError(null);
      })
      .catch((err: Error) => setError(`${t("failed")}: ${err.message}`));
  }, [token, logout, t, changed]);

  return (
    <section aria-labelledby="notices" className="mt-8" data-testid="notices">
      <h2 id="notices" className="mb-2 text-lg font-semibold">
        {t("noticesTitle")}
      </h2>
      {error && <p role="alert" className="text-red-800">{error}</p>}
      {notices === null ? (
        <p>{t("loading")}</p>
      ) : notices.length === 0 ? (
        <p>{t("noNotices")}</p>
      ) : (
        <ul className="num flex flex-col gap-1 rounded-lg bg-white p-3 text-sm shadow-sm">
          {notices.map((n, i) => (
            <li
              key={i}
              data-testid="notice"
              data-kind={n.kind}
              data-code={n.code ?? ""}
              className="flex flex-wrap gap-x-3 border-b border-slate-100 py-1 last:border-0"
            >
              <span className="text-slate-600">{formatKst(n.told_at)}</span>
              <strong>{t(`notice_${n.kind}` as Key) || n.kind}</strong>
              {n.code && (
                <span>
                  {n.name} <span className="text-slate-600">{n.code}</span>
                </span>
              )}
              {n.quantity !== null && (
                <span data-testid="notice-qty">
                  {n.quantity}
                  {t("sharesUnit")}
                </span>
              )}
              {n.price !== null && <span>{formatKrw(n.price)}</span>}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
