"use client";

import { useCallback, useEffect, useState } from "react";
import { Alert, button, OpsNav, Shell } from "@/components/Shell";
import { formatKst } from "@/lib/format";
import type { Key } from "@/lib/i18n";
import { api, ApiError, useSession } from "@/lib/session";

const secondary =
  "rounded border border-slate-400 bg-white px-3 py-1 text-slate-800 hover:bg-slate-100 focus:outline-2 focus:outline-blue-700";

type Day = {
  trading_day: string | null;
  open_positions: number;
  orders: Record<string, { sent: number; filled: number; rejected: number; shares: number }>;
  exits: Record<string, number>;
  keys_not_active: { user_id: string; account_no: string; api_status: string; changed_at: string | null }[];
};

type SecurityEvent = {
  at: string;
  user_id: string | null;
  account_no: string | null;
  rule: string;
  severity: string;
  action_taken: string | null;
};

export default function OpsPage() {
  const { token, claims, logout, t } = useSession();
  const [events, setEvents] = useState<SecurityEvent[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [day, setDay] = useState<Day | null>(null);
  const [enabling, setEnabling] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);

  const load = useCallback(() => {
    if (!token || claims?.role !== "operator") return;
    api<SecurityEvent[]>("/api/admin/security-events?limit=100", { token, onUnauthorized: logout })
      .then(setEvents)
      .catch((err: Error) => setError(`${t("failed")}: ${err.message}`));
    api<Day>("/api/web/ops/day", { token, onUnauthorized: logout })
      .then(setDay)
      .catch((err: Error) => setError(`${t("failed")}: ${err.message}`));
  }, [token, claims, logout, t]);

  useEffect(load, [load]);

  /** Re-enable a DISABLED key (after the confirmation): ACTIVE again, the user is told; auto-trading stays off. */
  async function enable(userId: string, accountNo: string) {
    setEnabling(null);
    setError(null);
    setNotice(null);
    try {
      await api(`/api/admin/api-keys/${encodeURIComponent(userId)}/${encodeURIComponent(accountNo)}/enable`, {
        token,
        method: "POST",
        onUnauthorized: logout,
      });
      setNotice(`${t("keyEnabled")}: ${userId} · ${accountNo}`);
      load();
    } catch (err) {
      const status = err instanceof ApiError ? err.status : 0;
      setError(`${t("failed")}${status ? ` (${status})` : ""}: ${(err as Error).message}`);
    }
  }

  return (
    <Shell>
      <h1 className="mb-4 text-2xl font-bold">{t("opsTitle")}</h1>
      {claims?.role !== "operator" ? (
        <Alert kind="error">{t("operatorOnly")}</Alert>
      ) : (
        <>
        <OpsNav />
        {day && (
          <section aria-labelledby="day" className="mb-8" data-testid="day">
            <h2 id="day" className="mb-2 text-lg font-semibold">
              {t("dayTitle")} <span className="num text-sm font-normal text-slate-600">{day.trading_day ?? "-"}</span>
            </h2>
            <dl className="num grid grid-cols-2 gap-3 sm:grid-cols-4">
              <div className="rounded-lg bg-white p-3 shadow-sm">
                <dt className="text-xs text-slate-600">{t("openPositions")}</dt>
                <dd className="text-xl font-semibold" data-testid="open-positions">{day.open_positions}</dd>
              </div>
              {["BUY", "SELL"].map((side) => {
                const o = day.orders[side] ?? { sent: 0, filled: 0, rejected: 0, shares: 0 };
                return (
                  <div key={side} className="rounded-lg bg-white p-3 shadow-sm" data-testid={`orders-${side}`}>
                    <dt className="text-xs text-slate-600">
                      {t(`side_${side}` as Key)} {t("ordersSent")} / {t("ordersFilled")} / {t("ordersRejected")}
                    </dt>
                    <dd className="text-xl font-semibold">
                      {o.sent} / {o.filled} / {o.rejected}
                    </dd>
                  </div>
                );
              })}
              <div className="rounded-lg bg-white p-3 shadow-sm" data-testid="exits">
                <dt className="text-xs text-slate-600">{t("exitsFired")}</dt>
                <dd className="text-sm">
                  {["STOP_LOSS", "PRESERVE", "TAKE_PROFIT"].map((tier) => (
                    <span key={tier} className="mr-3 inline-block">
                      {t(`tier_${tier}` as Key)} <strong>{day.exits[tier] ?? 0}</strong>
                    </span>
                  ))}
                </dd>
              </div>
            </dl>
            <h3 className="mt-4 mb-1 font-semibold">{t("keysNotActive")}</h3>
            {day.keys_not_active.length === 0 ? (
              <p className="text-sm">{t("allKeysActive")}</p>
            ) : (
              <ul className="flex flex-col gap-2 text-sm">
                {day.keys_not_active.map((k) => (
                  <li key={k.account_no} className="num" data-testid={`key-${k.account_no}`}>
                    <span className="mr-2">
                      {k.user_id} · {k.account_no} · <strong data-testid="key-status">{k.api_status}</strong> ·{" "}
                      {formatKst(k.changed_at)}
                    </span>
                    {k.api_status === "DISABLED" && (
                      <button type="button" className={secondary} onClick={() => setEnabling(k.account_no)}>
                        {t("enableKey")}
                        <span className="sr-only"> {k.account_no}</span>
                      </button>
                    )}
                    {enabling === k.account_no && (
                      <div
                        role="alertdialog"
                        aria-labelledby={`enable-${k.account_no}`}
                        className="mt-2 rounded border border-amber-300 bg-amber-50 p-3"
                      >
                        <p id={`enable-${k.account_no}`} className="mb-2 text-amber-950">
                          {t("enableConfirm")} ({k.user_id} · {k.account_no})
                        </p>
                        <span className="flex gap-2">
                          <button type="button" className={button} onClick={() => void enable(k.user_id, k.account_no)}>
                            {t("enableKey")}
                          </button>
                          <button type="button" className={secondary} onClick={() => setEnabling(null)} autoFocus>
                            {t("cancel")}
                          </button>
                        </span>
                      </div>
                    )}
                  </li>
                ))}
              </ul>
            )}
            {notice && (
              <div className="mt-2">
                <Alert kind="ok">{notice}</Alert>
              </div>
            )}
            <p className="mt-2 text-xs text-slate-600">{t("prefectHint")}</p>
          </section>
        )}
        <section aria-labelledby="sec">
          <h2 id="sec" className="mb-2 text-lg font-semibold">
            {t("securityEvents")}
          </h2>
          {error && <Alert kind="error">{error}</Alert>}
          {events === null ? (
            <p>{t("loading")}</p>
          ) : events.length === 0 ? (
            <p>{t("noEvents")}</p>
          ) : (
            <div
                tabIndex={0}
                role="region"
                aria-label={t("securityEvents")}
                className="overflow-x-auto rounded-lg bg-white shadow-sm focus:outline-2 focus:outline-blue-700"
              >
              <table className="num w-full min-w-[36rem] text-sm">
                <thead>
                  <tr className="border-b text-left text-slate-600">
                    <th scope="col" className="p-2 font-normal">{t("time")}</th>
                    <th scope="col" className="p-2 font-normal">{t("user")}</th>
                    <th scope="col" className="p-2 font-normal">{t("accountNo")}</th>
                    <th scope="col" className="p-2 font-normal">{t("rule")}</th>
                    <th scope="col" className="p-2 font-normal">{t("severity")}</th>
                    <th scope="col" className="p-2 font-normal">{t("action")}</th>
                  </tr>
                </thead>
                <tbody>
                  {events.map((e, i) => (
                    <tr key={i} className="border-b last:border-0">
                      <td className="p-2">{formatKst(e.at)}</td>
                      <td className="p-2">{e.user_id ?? "-"}</td>
                      <td className="p-2">{e.account_no ?? "-"}</td>
                      <td className="p-2">{e.rule}</td>
                      <td className="p-2">{e.severity}</td>
                      <td className="p-2">{e.action_taken ?? "-"}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </section>
        </>
      )}
    </Shell>
  );
}
