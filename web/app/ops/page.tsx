"use client";

import { useEffect, useState } from "react";
import { Alert, Shell } from "@/components/Shell";
import { formatKst } from "@/lib/format";
import { api, useSession } from "@/lib/session";

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

  useEffect(() => {
    if (!token || claims?.role !== "operator") return;
    api<SecurityEvent[]>("/api/admin/security-events?limit=100", { token, onUnauthorized: logout })
      .then(setEvents)
      .catch((err: Error) => setError(`${t("failed")}: ${err.message}`));
  }, [token, claims, logout, t]);

  return (
    <Shell>
      <h1 className="mb-4 text-2xl font-bold">{t("opsTitle")}</h1>
      {claims?.role !== "operator" ? (
        <Alert kind="error">{t("operatorOnly")}</Alert>
      ) : (
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
      )}
    </Shell>
  );
}
