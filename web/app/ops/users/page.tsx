"use client";

import { useCallback, useEffect, useState } from "react";
import { Alert, OpsNav, Shell } from "@/components/Shell";
import type { Key } from "@/lib/i18n";
import { api, useSession } from "@/lib/session";

type UserRow = {
  user_id: string;
  email: string | null;
  role: string;
  keys: { account_no: string; api_status: string }[];
};

const small =
  "rounded border border-slate-400 bg-white px-3 py-1 text-sm text-slate-800 hover:bg-slate-100 focus:outline-2 focus:outline-blue-700 disabled:opacity-60";

export default function UsersPage() {
  const { token, claims, logout, t } = useSession();
  const [users, setUsers] = useState<UserRow[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const isOperator = claims?.role === "operator";

  const load = useCallback(async () => {
    if (!token || !isOperator) return;
    try {
      setUsers(await api<UserRow[]>("/api/admin/users", { token, onUnauthorized: logout }));
    } catch (err) {
      setError(`${t("failed")}: ${(err as Error).message}`);
    }
  }, [token, isOperator, logout, t]);

  useEffect(() => {
    void load();
  }, [load]);

  async function setRole(u: UserRow, role: string) {
    setBusy(u.user_id);
    setError(null);
    setNotice(null);
    try {
      const r = await api<UserRow>(`/api/admin/users/${encodeURIComponent(u.user_id)}/role`, {
        token,
        onUnauthorized: logout,
        method: "PUT",
        body: { role },
      });
      setNotice(`${t("roleChanged")} ${r.email ?? r.user_id} → ${t(`role_${r.role}` as Key)}`);
      await load();
    } catch (err) {
      setError(`${t("failed")}: ${(err as Error).message}`);
    } finally {
      setBusy(null);
    }
  }

  return (
    <Shell>
      <h1 className="mb-4 text-2xl font-bold">{t("usersTitle")}</h1>
      {!isOperator ? (
        <Alert kind="error">{t("operatorOnly")}</Alert>
      ) : (
        <>
          <OpsNav />
          <div className="mb-3 flex flex-col gap-2">
            {error && <Alert kind="error">{error}</Alert>}
            {notice && <Alert kind="ok">{notice}</Alert>}
          </div>
          {users === null ? (
            <p>{t("loading")}</p>
          ) : (
            <ul className="flex flex-col gap-3" data-testid="users">
              {users.map((u) => {
                const self = u.user_id === claims?.sub;
                const operator = u.role === "operator";
                return (
                  <li
                    key={u.user_id}
                    data-testid={`user-${u.email ?? u.user_id}`}
                    className="flex flex-wrap items-center gap-x-6 gap-y-2 rounded-lg bg-white p-4 shadow-sm"
                  >
                    <span className="min-w-0 break-all font-medium">
                      {u.email ?? u.user_id} {self && <span className="text-slate-600">{t("you")}</span>}
                    </span>
                    <span>
                      {t("role")}: <strong data-testid="role">{t(`role_${u.role}` as Key) ?? u.role}</strong>
                    </span>
                    <span className="num text-sm text-slate-700">
                      {t("nav_keys")}:{" "}
                      {u.keys.length === 0
                        ? t("noKeys")
                        : u.keys.map((k) => `${k.account_no} ${k.api_status}`).join(", ")}
                    </span>
                    {!self && (
                      <button
                        type="button"
                        className={`${small} ml-auto`}
                        disabled={busy === u.user_id}
                        onClick={() => setRole(u, operator ? "user" : "operator")}
                      >
                        {operator ? t("unmakeOperator") : t("makeOperator")}
                        <span className="sr-only"> — {u.email ?? u.user_id}</span>
                      </button>
                    )}
                  </li>
                );
              })}
            </ul>
          )}
        </>
      )}
    </Shell>
  );
}
