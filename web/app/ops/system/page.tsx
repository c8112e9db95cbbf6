"use client";

import { useCallback, useEffect, useState, type FormEvent } from "react";
import { Alert, button, Field, OpsNav, Shell } from "@/components/Shell";
import { formatKrw, formatKst } from "@/lib/format";
import type { Key } from "@/lib/i18n";
import { api, ApiError, useSession } from "@/lib/session";

type Ready = { ready: boolean; checks: Record<string, boolean>; at: string };
type Deployment = {
  name: string;
  url: string | null;
  last_run_state: string | null;
  last_run_at: string | null;
  last_run_url: string | null;
};
type Prefect = { ui_url: string | null; source: string | null; deployments: Deployment[] };
type ScanRow = { code: string; name: string; score: number; current_price: number; reasons?: string[] };
type Outcome = {
  success: boolean;
  executed_orders: number;
  total_investment: number;
  strategies_created: number;
  message: string;
  run_id: string | null;
  plans?: AccountPlan[] | null;
};
type PlannedOrder = { code: string; name: string; quantity: number; price: number; amount: number };
type AccountPlan = { user_id: string; account_no: string; total: number; orders: PlannedOrder[] };

const secondary =
  "rounded border border-slate-400 bg-white px-4 py-2 text-slate-800 hover:bg-slate-100 focus:outline-2 focus:outline-blue-700 disabled:opacity-60";
const danger =
  "rounded bg-red-700 px-4 py-2 font-medium text-white hover:bg-red-800 focus:outline-2 focus:outline-offset-2 focus:outline-red-700 disabled:opacity-60";

function todayKst(): string {
  return new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Seoul" }).format(new Date());
}

export default function SystemPage() {
  const { token, claims, logout, t } = useSession();
  const isOperator = claims?.role === "operator";
  const [ready, setReady] = useState<Ready | null>(null);
  const [prefect, setPrefect] = useState<Prefect | null>(null);
  const [error, setError] = useState<string | null>(null);

  const check = useCallback(async () => {
    try {
      // /ready answers 503 with the failed checks: both are an answer to show
      const r = await fetch("/ready", { headers: { Accept: "application/json" }, cache: "no-store" });
      const body = (await r.json()) as Omit<Ready, "at">;
      setReady({ ...body, at: new Date().toISOString() });
    } catch (err) {
      setError(`${t("failed")}: /ready ${(err as Error).message}`);
    }
  }, [t]);

  useEffect(() => {
    if (!token || !isOperator) return;
    void check();
    api<Prefect>("/api/admin/prefect", { token, onUnauthorized: logout })
      .then(setPrefect)
      .catch((err: Error) => setError(`${t("failed")}: ${err.message}`));
  }, [token, isOperator, logout, t, check]);

  return (
    <Shell>
      <h1 className="mb-4 text-2xl font-bold">{t("systemTitle")}</h1>
      {!isOperator ? (
        <Alert kind="error">{t("operatorOnly")}</Alert>
      ) : (
        <>
          <OpsNav />
          {error && (
            <div className="mb-4">
              <Alert kind="error">{error}</Alert>
            </div>
          )}
          <div className="grid gap-6 md:grid-cols-2">
            <section aria-labelledby="feed" data-testid="health" className="rounded-lg bg-white p-5 shadow-sm">
              <h2 id="feed" className="mb-3 text-lg font-semibold">
                {t("feedTitle")}
              </h2>
              {ready === null ? (
                <p>{t("loading")}</p>
              ) : (
                <>
                  <ul className="flex flex-col gap-2">
                    {["feed", "broker", "database"].map((name) => {
                      const ok = ready.checks[name];
                      return (
                        <li key={name} data-testid={`check-${name}`} className="flex items-center justify-between gap-3">
                          <span>{t(`check_${name}` as Key)}</span>
                          <strong
                            className={
                              ok
                                ? "whitespace-nowrap rounded bg-green-100 px-2 py-0.5 text-green-900"
                                : "whitespace-nowrap rounded bg-red-100 px-2 py-0.5 text-red-900"
                            }
                          >
                            {ok ? `✓ ${t("ok")}` : `✗ ${t("down")}`}
                          </strong>
                        </li>
                      );
                    })}
                  </ul>
                  <p className="num mt-3 text-xs text-slate-600">
                    {t("checkedAt")}: {formatKst(ready.at)}
                  </p>
                </>
              )}
              <button type="button" className={`${secondary} mt-3`} onClick={() => void check()}>
                {t("recheck")}
              </button>
            </section>

            <section aria-labelledby="prefect" data-testid="prefect" className="rounded-lg bg-white p-5 shadow-sm">
              <h2 id="prefect" className="mb-3 text-lg font-semibold">
                {t("prefectTitle")}
              </h2>
              {prefect === null ? (
                <p>{t("loading")}</p>
              ) : (
                <>
                  {prefect.ui_url ? (
                    <p className="mb-2 text-sm">
                      <a href={prefect.ui_url} className="text-blue-800 underline" rel="noreferrer">
                        {prefect.ui_url}
                      </a>{" "}
                      <span className="text-slate-600">
                        ({t("prefectFrom")} {prefect.source})
                      </span>
                    </p>
                  ) : (
                    <p className="mb-2 rounded border border-amber-300 bg-amber-50 p-3 text-sm text-amber-950" data-testid="no-prefect">
                      {t("prefectNone")}
                    </p>
                  )}
                  <ul className="flex flex-col gap-1 text-sm">
                    {prefect.deployments.map((d) => (
                      <li key={d.name} data-testid={`deployment-${d.name.split("/")[1]}`} className="break-all">
                        {d.url ? (
                          <a href={d.url} className="text-blue-800 underline" rel="noreferrer">
                            {d.name}
                            <span className="sr-only"> — {t("openInPrefect")}</span>
                          </a>
                        ) : (
                          <span>{d.name}</span>
                        )}
                        {d.last_run_state && (
                          <span className="ml-2 text-slate-700">
                            {t("lastRun")}:{" "}
                            {d.last_run_url ? (
                              <a href={d.last_run_url} className="text-blue-800 underline" rel="noreferrer">
                                {d.last_run_state}
                              </a>
                            ) : (
                              d.last_run_state
                            )}{" "}
                            {formatKst(d.last_run_at)}
                          </span>
                        )}
                      </li>
                    ))}
                  </ul>
                </>
              )}
            </section>
          </div>
          <EveningRun />
        </>
      )}
    </Shell>
  );
}

/** The evening buy run for a day: a dry run first (nothing ordered), then the real run on the same scan and
 * day, after a confirmation. */
function EveningRun() {
  const { token, logout, t } = useSession();
  const [scan, setScan] = useState<ScanRow[] | null>(null);
  const [day, setDay] = useState(todayKst());
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [dry, setDry] = useState<{ key: string; out: Outcome } | null>(null);
  const [real, setReal] = useState<Outcome | null>(null);
  const [confirming, setConfirming] = useState(false);

  const key = scan ? `${day}|${JSON.stringify(scan)}` : "";
  const dryDone = dry !== null && dry.key === key && dry.out.success;

  async function readScan(file: File | undefined) {
    setError(null);
    setDry(null);
    setReal(null);
    setScan(null);
    if (!file) return;
    try {
      const data = JSON.parse(await file.text()) as { trading_day?: string; scan_results?: ScanRow[] };
      if (!Array.isArray(data.scan_results) || data.scan_results.length === 0) throw new Error("no rows");
      setScan(data.scan_results);
      if (typeof data.trading_day === "string" && /^\d{4}-\d{2}-\d{2}$/.test(data.trading_day)) setDay(data.trading_day);
    } catch {
      setError(t("badScan"));
    }
  }

  async function run(dryRun: boolean) {
    if (!scan) return setError(t("badScan"));
    setBusy(true);
    setError(null);
    setConfirming(false);
    try {
      const out = await api<Outcome>("/api/auto-trading/execute", {
        token,
        onUnauthorized: logout,
        body: { scan_results: scan, trading_day: day, dry_run: dryRun },
      });
      if (dryRun) setDry({ key, out });
      else setReal(out);
      if (!out.success && !out.run_id) setError(`${t("failed")}: ${out.message}`);
    } catch (err) {
      const status = err instanceof ApiError ? err.status : 0;
      setError(`${t("failed")}${status ? ` (${status})` : ""}: ${(err as Error).message}`);
    } finally {
      setBusy(false);
    }
  }

  function submit(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    void run(true);
  }

  return (
    <section aria-labelledby="evening" data-testid="evening" className="mt-6 rounded-lg bg-white p-5 shadow-sm">
      <h2 id="evening" className="mb-2 text-lg font-semibold">
        {t("eveningTitle")}
      </h2>
      <p className="mb-3 text-sm text-slate-700">{t("eveningHelp")}</p>
      <form onSubmit={submit} noValidate className="flex flex-col gap-3 sm:flex-row sm:items-end">
        <Field
          id="scan_file"
          label={t("scanFile")}
          type="file"
          accept="application/json,.json"
          onChange={(e) => void readScan(e.currentTarget.files?.[0])}
        />
        <Field
          id="trading_day"
          label={t("tradingDay")}
          type="date"
          value={day}
          onChange={(e) => setDay(e.currentTarget.value)}
          required
        />
        <button type="submit" className={button} disabled={busy || !scan}>
          {t("dryRun")}
        </button>
        <button type="button" className={danger} disabled={busy || !dryDone} onClick={() => setConfirming(true)}>
          {t("realRun")}
        </button>
      </form>
      {error && (
        <div className="mt-3">
          <Alert kind="error">{error}</Alert>
        </div>
      )}
      {dry && dry.key === key && <Result title={t("dryRunResult")} out={dry.out} testid="dry-result" />}
      {confirming && (
        <div role="alertdialog" aria-labelledby="confirm-run" className="mt-3 rounded border border-red-300 bg-red-50 p-3">
          <p id="confirm-run" className="mb-2 text-sm text-red-900">
            {t("confirmRun")} ({day})
          </p>
          <span className="flex gap-2">
            <button type="button" className={danger} onClick={() => void run(false)}>
              {t("realRun")}
            </button>
            <button type="button" className={secondary} onClick={() => setConfirming(false)} autoFocus>
              {t("cancel")}
            </button>
          </span>
        </div>
      )}
      {real && <Result title={t("realRunResult")} out={real} testid="real-result" />}
    </section>
  );
}

function Result({ title, out, testid }: { title: string; out: Outcome; testid: string }) {
  const { t } = useSession();
  return (
    <div role="status" data-testid={testid} className="mt-3 rounded border border-slate-300 bg-slate-50 p-3">
      <h3 className="mb-1 font-semibold">{title}</h3>
      {out.run_id ? (
        <p className="num text-sm">
          {t("runStarted")} {out.run_id}
        </p>
      ) : (
        <>
          <dl className="num grid grid-cols-[auto_1fr] gap-x-4 gap-y-1 text-sm">
            <dt>{t("plannedOrders")}</dt>
            <dd data-testid="orders">{out.executed_orders}</dd>
            <dt>{t("plannedInvestment")}</dt>
            <dd data-testid="investment">{formatKrw(out.total_investment)}</dd>
            <dt>{t("plannedPositions")}</dt>
            <dd data-testid="positions">{out.strategies_created}</dd>
          </dl>
          <p className="mt-1 text-xs text-slate-600">{out.message}</p>
          {out.plans && <Plans plans={out.plans} />}
        </>
      )}
    </div>
  );
}

/** A dry run's planned orders: one table per user and account, each order's amount and the account's total. */
function Plans({ plans }: { plans: AccountPlan[] }) {
  const { t } = useSession();
  const th = "p-1 font-normal sm:p-2";
  return (
    <div data-testid="plans" className="mt-3">
      <h4 className="mb-2 font-semibold">{t("plansTitle")}</h4>
      {plans.length === 0 && <p className="text-sm">{t("plansNone")}</p>}
      {plans.map((p) => {
        const label = `${t("user")} ${p.user_id} · ${t("accountNo")} ${p.account_no}`;
        return (
          <div
            key={`${p.user_id}|${p.account_no}`}
            data-testid={`plan-${p.user_id}`}
            tabIndex={0}
            role="region"
            aria-label={label}
            className="mb-3 overflow-x-auto rounded border border-slate-200 bg-white focus:outline-2 focus:outline-blue-700"
          >
            <table className="num w-full min-w-[18rem] text-sm">
              <caption className="px-2 pt-2 text-left font-medium text-slate-800">
                <span data-testid="plan-user">{p.user_id}</span> ·{" "}
                <span data-testid="plan-account">{p.account_no}</span>
              </caption>
              <thead>
                <tr className="border-b text-left text-slate-600">
                  <th scope="col" className={th}>{t("stock")}</th>
                  <th scope="col" className={`${th} text-right`}>{t("quantity")}</th>
                  <th scope="col" className={`${th} text-right`}>{t("price")}</th>
                  <th scope="col" className={`${th} text-right`}>{t("planAmount")}</th>
                </tr>
              </thead>
              <tbody>
                {p.orders.map((o) => (
                  <tr key={o.code} data-testid="plan-order" data-code={o.code} className="border-b border-slate-100">
                    <td className="p-1 sm:p-2">
                      {o.name} <span className="block text-xs text-slate-600 sm:inline sm:text-sm">{o.code}</span>
                    </td>
                    <td className="p-1 sm:p-2 text-right" data-testid="plan-qty">{o.quantity}</td>
                    <td className="p-1 sm:p-2 text-right" data-testid="plan-price">{formatKrw(o.price)}</td>
                    <td className="p-1 sm:p-2 text-right">{formatKrw(o.amount)}</td>
                  </tr>
                ))}
              </tbody>
              <tfoot>
                <tr className="font-semibold">
                  <th scope="row" colSpan={3} className="p-1 text-left sm:p-2">{t("planTotal")}</th>
                  <td className="p-1 sm:p-2 text-right" data-testid="plan-total">{formatKrw(p.total)}</td>
                </tr>
              </tfoot>
            </table>
          </div>
        );
      })}
    </div>
  );
}
